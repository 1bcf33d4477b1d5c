"""What a submission needs and nothing else: front end, backends, blends, post-processing, writer.

Importable without Lightning or torch (only numpy, pandas, soundfile, and onnxruntime or
openvino for exported models), so `task=bundle` copies this package next to its script.
`torch_backend` (project checkpoints) is the one module that needs torch; it is only
imported when a `.ckpt` model is loaded.
"""
