"""The stages and what they share: the tokenize loop (pipeline), resumable jobs (tokenize_job, mel_job),
journals and completion markers (journal), merges (merge), shards (sharding)."""
