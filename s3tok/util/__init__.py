"""Small utilities: atomic file writes (fsutil), logging set-up, the CPU malloc setting (cpu_memory), weights'
file pages given back (file_pages), decode workers on one thread each (worker_threads)."""
