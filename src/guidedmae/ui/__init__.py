"""`guidedmae ui`: a local web page of masked reconstruction. demo.py computes (no web framework),
app.py is the Gradio page, cli.py the command."""
