"""Model files: official names and the download cache (hub, fetch), the ONNX importer and exporter."""
