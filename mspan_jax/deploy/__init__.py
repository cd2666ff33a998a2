"""The exports for runtimes without JAX, ONNX (onnxruntime, TensorRT, ...) and TFLite (LiteRT,
Android), and the predictors behind `upscale.py --checkpoint model.onnx / model.tflite`
(docs/usage.md "Export to ONNX", "Export to TFLite").

`jaxpr_walk` walks the model's traced program (a jaxpr with symbolic batch, height and width),
folding constants and computing the shape arithmetic (pooled and resized sizes) from the input's
runtime shape; `jaxpr_onnx` and `jaxpr_tf` are its ONNX and TensorFlow rules; `model_fn` is the
exported function and its metadata; `onnx_export` / `tflite_export` write the files;
`onnx_runtime` / `tflite_runtime` run them.
"""
