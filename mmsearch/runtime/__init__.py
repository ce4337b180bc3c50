"""Process and network plumbing shared by every server: child processes, the embedded stores, ports, deadlines, WSGI/gRPC edges, logs and metrics."""
