"""Small utilities: atomic file writes (fsutil), logging set-up, the CPU malloc setting (cpu_memory)."""
