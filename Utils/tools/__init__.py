"""Utils, layer 3: commands around the models, not used by them: benchmarks and peer drivers
(`peer_recbole`, `peer_rechub`, `dpp_speed`) and the repository's own checks
(`notes_check`, `results_table`, `seed_summary`). Each runs as `python -m Utils.tools.<name>`."""
