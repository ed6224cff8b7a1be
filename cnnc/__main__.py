import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while cnnc starts: no traceback
    sys.stderr.write("cnnc: interrupted\n")
    sys.exit(130)

main()
