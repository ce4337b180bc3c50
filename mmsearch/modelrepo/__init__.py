"""The model repository contract: manifests, Triton configs, preprocessing and running a model folder locally."""
