"""A Hugging Face Hub compatible test server over a directory of real model files."""
