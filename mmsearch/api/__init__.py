"""The search API's contract: the request/response models and the filter language, shared by the
services that serve it and the client that calls it."""
