"""Layer 8, the HTTP service: one worker thread owning a model and an index (engine), the application and its page (app, web/)."""
