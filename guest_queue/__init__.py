"""guest_queue: admission control, live queue positions and SSE streaming for a guest chatbot."""

__version__ = "0.1.0"
