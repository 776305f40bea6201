"""Model families: one package per family implementation (the registry's `model_family` value)."""
