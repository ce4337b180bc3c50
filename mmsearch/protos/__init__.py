"""Generated gRPC code (``make protos``); sources in protos/mmsearch/protos/. Do not edit by hand."""
