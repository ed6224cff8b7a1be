"""Converters from other frameworks' model code to cnnc model files.

`cnnc.convert.keras` reads Python source that builds a Keras model (without importing or running
it) and writes the equivalent cnnc program; `cnnc convert MODEL.py` is its command.
"""

from cnnc.convert.keras import Conversion, convert_keras_file, convert_keras_source

__all__ = ["Conversion", "convert_keras_file", "convert_keras_source"]
