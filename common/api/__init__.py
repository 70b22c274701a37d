"""Stage 4's REST API: a FastAPI facade over the gRPC TaskService (API = consumer, core =
provider). The app is built in `common.api.app`; errors are RFC 9457 problems
(`common.api.problems`); request handling is a chain of small links (`common.api.links`)."""
