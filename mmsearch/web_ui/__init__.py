"""The search page (Flask): create_app(config) calls the retrieval service's HTTP API."""
