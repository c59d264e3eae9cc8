"""FFCV .beton files: write.py converts an image folder into them (atomically, bad images named, and
`import_ffcv`, the one import of ffcv with its install advice); read.py reads one whole (labels,
images), checks a file is complete before ffcv opens it, and iterates an ffcv loader so that its thread
stops however the loop ends. read.py imports write.py; the loader is bench/data/ffcv_loader.py."""
