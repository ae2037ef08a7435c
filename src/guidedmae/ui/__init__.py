"""The interactive viewer (`guidedmae ui`): demo computes a comparison of two masking strategies on one
image with the training code's own paths (no web framework); app is the Gradio page around it.

Layer: may import every package below the commands (engine, config, masking, models, data, infra, ...);
Gradio is imported only when a page is built (the `ui` extra).
"""

__all__ = ["app", "demo"]
