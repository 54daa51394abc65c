"""Files: funcdl's model file, the atomic writer, and the registry of model-file formats."""
