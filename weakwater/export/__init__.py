"""Leaving the project: HF Llama/Qwen3 directories, GGUF for llama.cpp/Ollama, and importing MiniMind checkpoints."""
