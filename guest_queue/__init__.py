"""guest_queue: admission control, live queue positions and SSE streaming for a guest chatbot."""
