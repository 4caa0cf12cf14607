"""The built-in demo model and tiny random checkpoints in the real format (`qwen3-api make-tiny-model`).

Fixtures for tests, benchmarks and a first `qwen3-api serve` without a checkpoint: they build on the model
package (its config and tensor names) and nothing builds on them.
"""
