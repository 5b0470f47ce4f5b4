"""Leaving the project: HF Llama directories, GGUF for llama.cpp/Ollama, and importing MiniMind checkpoints."""
