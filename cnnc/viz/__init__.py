"""Pictures cnnc draws itself: training curves (`cnnc plot`) and layer graphs (`cnnc graph`)."""
