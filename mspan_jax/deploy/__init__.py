"""The export for runtimes without JAX, ONNX (onnxruntime, TensorRT, ...), and the onnxruntime
predictor behind `upscale.py --checkpoint model.onnx` (docs/usage.md "Export to ONNX").

`jaxpr_onnx` turns the model's traced program (a jaxpr with symbolic batch, height and width) into
an ONNX graph, primitive by primitive, with the shape arithmetic (pooled and resized sizes)
computed from the input's runtime shape; `onnx_export` wraps it for a model and its weights;
`onnx_runtime` runs the file.
"""
