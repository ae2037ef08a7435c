"""The interactive viewer (`guidedmae ui`): `demo` computes a comparison of two masking strategies on one
image with the training code's own paths (no web framework), `scenes` the same over many held-out scenes;
`checkpoint` says what a checkpoint offers, `uploads` reads the user's files, `figure` draws the pictures;
`controls` turns what the page's controls hold into its outputs, and `app` is the Gradio page around them.

Layer: may import every package below the commands (engine, config, masking, models, data, infra, ...);
Gradio is imported only when a page is built (the `ui` extra).
"""

__all__ = ["app", "checkpoint", "controls", "demo", "figure", "scenes", "uploads"]
