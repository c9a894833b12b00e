"""The Quart routes, one module per resource; each ``register(app, service, admin)`` adds its own."""
