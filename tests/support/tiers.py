"""Which tests `make test-fast` runs, and what each costs (the order of the full run is built from it).

Every test file is placed here by name: "fast" (its tests join the fast subset unless one measured over
FAST_LIMIT) or "slow" (left to the full `make test` on purpose: it installs from the registry, soaks, or builds
and kills whole pipelines). tests/project/test_tiers.py fails for a file placed nowhere and for a measured test that
no longer exists, so the subset cannot rot silently. SECONDS holds every test function that took at least a
second, all its parameter cases together: `pytest -n 2 --junitxml`, 2 cores shared with other runs (load ~20),
so the figures are about twice an idle machine's; only their ratios matter here.
"""

from __future__ import annotations

import re
from pathlib import Path

#: A test function measured at this many seconds or more is left out of the fast subset, whatever its file.
FAST_LIMIT = 8.0

FILES: dict[str, str] = {
    "test_architecture.py": "fast",
    "test_archives.py": "fast",
    "test_archives_dask.py": "fast",
    "test_archives_member_damage.py": "fast",
    "test_archives_member_timing.py": "fast",
    "test_archives_mirror.py": "fast",
    "test_archives_resume.py": "slow",  # downloads and conversions killed
    "test_archives_units.py": "fast",
    "test_build.py": "slow",  # the whole build and the demo CLI
    "test_checksum.py": "fast",
    "test_cli_bad_input.py": "fast",
    "test_cli_exit_paths.py": "fast",
    "test_cli_settings.py": "fast",
    "test_damaged_root.py": "slow",  # the tiny demo build, 40 damages
    "test_dask_cluster.py": "slow",  # a Dask LocalCluster with a worker killed
    "test_dask_executor.py": "slow",  # a Dask LocalCluster per test
    "test_dask_hygiene.py": "slow",  # LocalCluster processes killed
    "test_decode_budget.py": "fast",
    "test_decode_cost.py": "fast",
    "test_dedup.py": "fast",
    "test_dedup_pipeline.py": "slow",  # builds a 260-image universe through dedup
    "test_docs.py": "slow",  # every docs block against the tiny demo build
    "test_error_rules.py": "fast",
    "test_errors.py": "fast",
    "test_estimate.py": "slow",  # the tiny demo build
    "test_estimate_neighbors.py": "slow",  # the tiny demo build, real features and neighbors runs
    "test_extras.py": "fast",
    "test_features.py": "slow",  # the tiny demo build, kill -9
    "test_features_clip.py": "slow",  # the tiny demo build, a full-size ViT-B-32 (600 MB of weights)
    "test_features_models.py": "slow",  # the full-size networks
    "test_features_input.py": "fast",
    "test_features_progress.py": "slow",  # the tiny demo build, real features runs, kill -9
    "test_similarity_defaults.py": "fast",
    "test_similarity_s3.py": "slow",  # the tiny demo on a folder and in moto, real features and neighbors runs
    "test_fetch_diskfull.py": "slow",  # a full disk
    "test_fetch_http.py": "fast",
    "test_fetch_mirror.py": "fast",
    "test_fetch_resume.py": "slow",  # kill -9 at random moments
    "test_fetch_symlinks.py": "fast",
    "test_fetch_transform.py": "fast",
    "test_fingerprint.py": "fast",
    "test_first_contact.py": "slow",  # the real script against the mirror
    "test_function_length.py": "fast",
    "test_hash_stage.py": "fast",
    "test_help_terminal.py": "slow",  # every command's help in a real terminal
    "test_import_cycles.py": "fast",
    "test_imports_declared.py": "fast",
    "test_install.py": "slow",  # installs from the package registry
    "test_layout_rules.py": "fast",
    "test_ledger_columns.py": "fast",
    "test_ledger_ownership.py": "fast",
    "test_ledger_parts_only.py": "fast",
    "test_ledger_reader.py": "fast",
    "test_ledger_row.py": "fast",
    "test_memory_bound.py": "slow",  # giant decodes, peak RSS
    "test_memory_budget.py": "fast",
    "test_metadata.py": "fast",
    "test_mirror.py": "fast",
    "test_mirror_cache.py": "fast",
    "test_neighbors.py": "fast",
    "test_neighbors_dask.py": "slow",  # a Dask LocalCluster per test
    "test_neighbors_executors.py": "fast",
    "test_neighbors_report.py": "fast",
    "test_net_guard.py": "fast",
    "test_net_guard_fetch.py": "fast",
    "test_net_guard_proxy.py": "fast",
    "test_plan.py": "fast",
    "test_plan_fuzz.py": "fast",
    "test_process_hygiene.py": "slow",  # fetches killed and signalled
    "test_read_features.py": "fast",
    "test_reader.py": "fast",
    "test_readonly_root.py": "fast",
    "test_report.py": "fast",
    "test_root_guard.py": "fast",
    "test_run_lock.py": "fast",
    "test_s3_destination.py": "fast",
    "test_safe_paths.py": "fast",
    "test_shard_settings.py": "fast",
    "test_similarity_bad_input.py": "slow",  # the tiny demo build, features run by the real command
    "test_soak.py": "slow",  # 5,000 rows killed five times
    "test_stage_base.py": "fast",
    "test_status.py": "fast",
    "test_status_footers.py": "fast",
    "test_status_view.py": "fast",
    "test_storage_backends.py": "fast",
    "test_store.py": "fast",
    "test_stored_reason_kinds.py": "fast",
    "test_strict_decode.py": "fast",
    "test_tiers.py": "fast",
    "test_tls_proxy.py": "fast",
    "test_transfer_settings.py": "fast",
    "test_transfers.py": "fast",
    "test_verify.py": "fast",
    "test_verify_damage.py": "slow",  # every damage in every layout
    "test_verify_pipeline.py": "slow",  # the whole pipeline, then damage
    "test_why_comments.py": "fast",
    "test_worker_worst_case_memory.py": "slow",  # giant images, peak RSS
}

SECONDS: dict[str, float] = {
    "test_install.py::test_a_plain_pip_install_at_the_newest_versions_runs_every_command_and_a_fetch": 380.8,
    "test_docs.py::test_the_offline_section_runs_as_written": 302.0,
    "test_soak.py::test_a_fetch_killed_five_times_through_a_full_disk_ends_as_if_undisturbed": 287.5,
    "test_install.py::test_the_lowest_s3_and_dask_extras_fetch_on_a_dask_cluster_into_an_s3_root": 279.4,
    "test_install.py::test_the_lowest_supported_versions_plan_fetch_and_read_against_the_mirror": 277.7,
    "test_fetch_resume.py::test_resume_after_kill_9_ends_byte_identical_to_an_uninterrupted_run": 183.7,
    "test_features.py::test_kill_9_mid_shard_then_resume_is_byte_identical_to_an_uninterrupted_run": 163.0,
    "test_verify_damage.py::test_verify_finds_each_damage_in_each_layout_and_fetch_repairs_it": 159.5,
    "test_docs.py::test_python_blocks_of_each_document_run_against_a_tiny_build": 143.9,
    "test_help_terminal.py::test_help_fits_the_terminal_and_cuts_no_description": 132.6,
    "test_features.py::test_bad_input_is_one_line_with_exit_code_2": 125.3,
    "test_first_contact.py::test_a_demo_rerun_prints_outcomes_in_words_and_the_plan_in_set_order": 123.0,
    "test_dedup_pipeline.py::test_dedup_finds_the_planted_copies_with_full_precision_at_the_default_threshold": 114.5,
    "test_dedup_pipeline.py::test_demo_prints_hash_lines_and_a_dedup_headline_with_the_planted_leaks": 91.5,
    "test_features.py::test_every_stored_image_gets_its_model_vector_in_plan_order_and_embedding_reader_reads_them": 91.2,
    "test_estimate.py::test_a_finished_build_has_nothing_left_to_transfer_store_or_wait_for": 88.4,
    "test_damaged_root.py::test_every_command_names_a_damaged_file_and_changes_nothing": 76.5,
    "test_first_contact.py::test_blocked_rows_are_fetched_when_the_same_fetch_is_rerun_with_the_flag": 75.4,
    "test_fetch_diskfull.py::test_disk_full_aborts_the_run_clearly_and_a_rerun_after_freeing_space_finishes": 68.5,
    "test_dask_hygiene.py::test_the_local_clusters_processes_die_with_the_main_process": 64.3,
    "test_docs.py::test_every_oiv4_command_line_in_a_shell_block_parses_and_read_only_ones_run": 55.7,
    "test_verify_pipeline.py::test_pipeline_output_reads_verifies_and_recovers_from_damage": 54.4,
    "test_plan_fuzz.py::test_damaged_metadata_plans_every_record_or_fails_with_a_plan_error": 53.6,
    "test_fetch_mirror.py::test_cli_status_and_fetch_explain_themselves": 50.1,
    "test_features.py::test_a_dimension_that_does_not_match_earlier_shards_is_refused": 47.4,
    "test_first_contact.py::test_without_the_flag_blocked_rows_stay_finished": 45.7,
    "test_plan_fuzz.py::test_a_bare_cr_lf_or_nul_in_any_field_is_planned_or_rejected_with_its_line_never_lost": 44.6,
    "test_hash_stage.py::test_hash_records_the_same_checksum_and_phash_fetch_would_have_and_a_rerun_does_nothing": 42.3,
    "test_dask_cluster.py::test_dask_fetch_survives_a_killed_worker_with_a_complete_duplicate_free_ledger": 37.6,
    "test_features.py::test_on_dask_the_pairs_are_the_same_bytes_and_a_changed_byte_is_caught_by_the_recorded_checksums": 35.4,
    "test_decode_cost.py::test_a_progressive_decode_holds_no_more_than_its_charge": 35.1,
    "test_features_models.py::test_vgg16_fc2_loads_a_saved_state_dict_and_gives_4096_nonnegative_activations": 34.0,
    "test_fetch_mirror.py::test_every_row_ends_in_exactly_the_outcome_its_misbehaviour_calls_for": 32.6,
    "test_process_hygiene.py::test_off_a_terminal_progress_is_json_lines_and_the_summary_a_line_of_its_own": 32.1,
    "test_readonly_root.py::test_a_writing_command_on_a_read_only_root_is_one_line_and_exit_5": 31.8,
    "test_build.py::test_demo_cli_runs_the_pipeline_and_exits_zero": 31.8,
    "test_hash_stage.py::test_cli_dedup_asks_for_hash_first_then_prints_the_headline": 31.7,
    "test_process_hygiene.py::test_off_a_terminal_text_progress_is_plain_lines_ending_in_newlines": 31.5,
    "test_reader.py::test_s3_root_reads_through_fsspec": 29.8,
    "test_dask_executor.py::test_killed_worker_shard_is_rerun_and_skips_the_rows_it_finished": 27.2,
    "test_worker_worst_case_memory.py::test_a_worker_stays_within_the_stated_bound": 25.4,
    "test_fetch_mirror.py::test_byte_cap_refuses_early_and_retry_failed_redoes_only_what_it_names": 25.3,
    "test_fetch_mirror.py::test_archive_layouts_hold_exactly_the_ok_images_byte_identical_to_the_folder_layout": 23.4,
    "test_process_hygiene.py::test_kill_9_of_the_main_process_leaves_no_worker_and_closes_the_pipe": 23.2,
    "test_memory_bound.py::test_peak_rss_of_concurrent_giant_decodes_stays_within_the_budget_bound": 22.1,
    "test_report.py::test_every_number_in_every_table_is_fully_visible_at_1280_1600_and_1920_px": 21.9,
    "test_process_hygiene.py::test_sigterm_stops_like_ctrl_c_with_exit_130_and_a_resume_hint": 20.6,
    "test_dedup_pipeline.py::test_report_shows_example_pairs_side_by_side_at_several_distances": 20.2,
    "test_report.py::test_report_page_draws_charts_and_thumbnails_in_a_real_browser": 19.4,
    "test_neighbors.py::test_resume_after_kill_is_byte_identical": 18.5,
    "test_dask_executor.py::test_shard_that_raises_is_retried_by_dask": 18.4,
    "test_first_contact.py::test_refused_private_addresses_name_the_cli_flag": 17.7,
    "test_decode_budget.py::test_several_giant_images_at_once_never_hold_more_than_the_budget": 17.4,
    "test_neighbors_executors.py::test_a_worker_killed_past_the_restarts_allowed_is_one_line_exit_7_and_the_rerun_finishes": 16.9,
    "test_shard_settings.py::test_fetch_resumed_with_another_quality_is_refused_then_forced_and_recorded": 17.3,
    "test_build.py::test_build_produces_all_four_sets_and_a_rerun_redoes_nothing": 16.4,
    "test_dask_executor.py::test_shard_failing_every_retry_raises_its_error": 16.0,
    "test_features_models.py::test_no_network_and_no_cache_says_where_the_weights_come_from_and_how_to_supply_them": 15.5,
    "test_features_models.py::test_resnet50_loads_a_saved_state_dict_and_gives_2048_pooled_features": 14.6,
    "test_net_guard_fetch.py::test_many_endless_bodies_at_once_keep_peak_memory_bounded": 14.4,
    "test_neighbors_executors.py::test_kill_9_on_the_pool_leaves_no_worker_and_the_rerun_keeps_finished_blocks_byte_identical": 14.4,
    "test_fetch_mirror.py::test_fallback_thumbnail_is_used_only_when_asked_and_is_marked_unverified": 13.8,
    "test_cli_exit_paths.py::test_a_reader_that_closes_the_pipe_ends_the_command_quietly_with_0": 12.9,
    "test_plan.py::test_plan_cli_prints_counts_and_errors_cleanly": 12.6,
    "test_ledger_ownership.py::test_a_rewritten_row_with_the_same_started_at_wins_over_the_row_it_rewrites_however_many_parts": 12.3,
    "test_dask_executor.py::test_dask_local_cluster_runs_each_shard_once_on_worker_processes": 11.2,
    "test_features_models.py::test_networks_have_the_parameter_names_and_shapes_of_torchvisions_published_checkpoints": 10.7,
    "test_dedup.py::test_planted_copies_are_found_with_high_recall_and_no_false_pairs": 10.1,
    "test_verify.py::test_intact_data_gets_a_clean_bill_in_every_layout": 9.8,
    "test_extras.py::test_oiv4_fetch_into_an_s3_root_without_s3fs_prints_only_the_install_hint": 9.4,
    "test_docs.py::test_every_oiv4_flag_named_anywhere_in_the_docs_exists_on_its_command": 9.2,
    "test_extras.py::test_importing_every_core_module_loads_no_optional_dependency": 9.0,
    "test_dask_executor.py::test_workers_that_cannot_see_the_root_fail_before_any_shard_runs": 8.8,
    "test_s3_destination.py::test_read_set_while_shards_compact_never_fails_nor_loses_rows": 8.5,
    "test_features_models.py::test_features_without_torch_is_a_one_line_hint_naming_the_features_extra": 8.2,
    "test_status_footers.py::test_status_is_exact_when_rows_are_recorded_twice": 8.2,
    "test_first_contact.py::test_the_mirror_help_example_is_what_the_mirror_prints": 8.1,
    "test_extras.py::test_oiv4_fetch_with_the_dask_executor_and_no_dask_prints_only_the_hint_before_any_progress": 8.1,
    "test_neighbors_dask.py::test_cli_executor_dask_starts_its_own_cluster_of_workers_and_gives_the_same_bytes": 7.9,
    "test_help_terminal.py::test_piped_help_has_no_terminal_codes_and_fits_its_width": 7.5,
    "test_fetch_mirror.py::test_hostile_ids_are_recorded_as_invalid_and_never_become_paths": 7.4,
    "test_cli_bad_input.py::test_a_bad_option_value_is_a_one_line_usage_error": 7.1,
    "test_neighbors_executors.py::test_two_pool_workers_give_the_bytes_of_one_process_and_the_summed_search_counts": 6.6,
    "test_fetch_mirror.py::test_stored_images_are_upright_rgb_jpegs_that_fit_1024": 6.4,
    "test_extras.py::test_tensors_without_torch_name_the_torch_extra_while_pil_items_still_work": 6.3,
    "test_imports_declared.py::test_every_third_party_import_under_src_is_declared_for_the_install_that_reaches_it": 5.8,
    "test_first_contact.py::test_a_reused_plan_is_listed_in_set_order": 5.7,
    "test_transfers.py::test_an_interrupted_metadata_download_and_archive_download_leave_the_same_state": 5.2,
    "test_neighbors_dask.py::test_blocks_sent_to_a_running_scheduler_run_on_its_workers_and_give_the_same_bytes": 5.1,
    "test_dedup_pipeline.py::test_train_without_duplicates_of_held_out_sets_never_yields_a_held_out_image": 5.2,
    "test_plan.py::test_metadata_and_plan_work_on_an_s3_root": 5.0,
    "test_fetch_symlinks.py::test_a_symlink_anywhere_above_an_image_is_refused_as_unsafe_path_and_nothing_is_written_outside": 4.9,
    "test_run_lock.py::test_object_store_roots_get_a_lease_that_a_second_run_respects_and_a_dead_one_loses": 4.8,
    "test_imports_declared.py::test_the_cli_imports_no_click": 4.5,
    "test_features_models.py::test_weights_come_from_the_file_given_or_the_torch_hub_cache": 4.5,
    "test_metadata.py::test_http_error_is_a_clear_cli_error_not_a_traceback": 4.3,
    "test_help_terminal.py::test_oiv4_alone_shows_the_help_fitted_to_the_terminal": 4.1,
    "test_extras.py::test_an_s3_archive_source_without_its_client_names_the_s3_extra": 4.0,
    "test_s3_destination.py::test_open_atomic_on_s3_publishes_nothing_when_the_writer_fails": 3.8,
    "test_help_terminal.py::test_a_narrow_terminal_puts_a_long_option_above_its_description": 3.7,
    "test_archives_mirror.py::test_targets_stream_from_s3_holding_the_mirror_archives": 3.6,
    "test_plan_fuzz.py::test_a_35_mb_title_is_rejected_not_silently_dropped": 3.5,
    "test_transfers.py::test_there_is_exactly_one_retry_loop_in_the_source_tree": 3.5,
    "test_verify_damage.py::test_verify_finds_each_damage_in_the_archive_zips": 3.4,
    "test_damaged_root.py::test_damaged_dedup_results_are_named_by_report_and_the_reader": 3.4,
    "test_tls_proxy.py::test_every_transfer_goes_through_the_proxy_and_no_proxy_bypasses_it": 3.3,
    "test_transfers.py::test_oiv4_talks_http_through_aiohttp_and_s3_through_s3fs_only": 3.3,
    "test_s3_destination.py::test_storage_on_s3_sees_what_other_writers_add_and_remove": 3.2,
    "test_ledger_ownership.py::test_hash_changes_only_the_ledger_columns_it_owns": 3.2,
    "test_imports_declared.py::test_a_required_module_is_imported_only_inside_functions_outside_its_gated_module": 3.1,
    "test_damaged_root.py::test_oiv4_open_raises_one_error_naming_the_damaged_file": 3.0,
    "test_archives_resume.py::test_ctrl_c_stops_the_cli_promptly_and_a_rerun_finishes": 3.0,
    "test_neighbors.py::test_cli_several_database_sets_never_return_the_query": 2.9,
    "test_features.py::test_an_unfinished_shard_resumed_with_other_weights_is_refused_unless_forced_and_the_override_recorded": 2.9,
    "test_strict_decode.py::test_clean_jpegs_of_every_encoding_decode_with_no_warnings_and_match_pillow": 2.8,
    "test_mirror.py::test_same_seed_gives_the_same_bytes_and_another_seed_other_bytes": 2.8,
    "test_reader.py::test_manifest_joins_every_plan_row_with_its_outcome": 2.7,
    "test_neighbors_dask.py::test_a_part_gives_faiss_the_threads_planned_for_it_on_a_dask_worker": 2.3,
    "test_archives_resume.py::test_resume_after_the_remote_changed_starts_over_and_says_so": 2.7,
    "test_archives_resume.py::test_kill_mid_download_resumes_and_fetches_only_the_missing_parts": 2.7,
    "test_first_contact.py::test_no_user_facing_message_names_a_settings_field": 2.6,
    "test_mirror.py::test_mirror_process_serves_the_same_universe_from_another_process": 2.6,
    "test_stored_reason_kinds.py::test_explaining_a_failed_id_reads_only_the_shard_that_lists_it": 2.5,
    "test_s3_destination.py::test_ledger_on_s3_resumes_from_parts_and_compacts": 2.4,
    "test_dedup.py::test_near_pairs_match_brute_force_exactly_up_to_the_threshold": 2.4,
    "test_cli_exit_paths.py::test_an_empty_sql_query_is_a_usage_error": 2.3,
    "test_tls_proxy.py::test_metadata_archives_and_fetch_work_over_tls_with_the_test_ca_as_ca_bundle": 2.3,
    "test_reader.py::test_torch_adapter_pickles_to_spawned_workers_and_yields_ids_with_rgb_images": 2.3,
    "test_features.py::test_estimate_counts_the_vectors_still_to_write_and_their_disk": 2.2,
    "test_net_guard_proxy.py::test_a_loopback_spelling_through_a_proxy_is_blocked_and_never_forwarded": 2.2,
    "test_dask_executor.py::test_unreachable_scheduler_is_a_clear_error": 2.1,
    "test_plan_fuzz.py::test_plan_cli_reports_a_malformed_file_in_one_message_without_a_traceback": 2.1,
    "test_estimate.py::test_the_command_prints_a_table_or_json_and_refuses_a_missing_root": 2.1,
    "test_reader.py::test_concurrent_reads_from_threads_return_the_right_bytes": 2.0,
    "test_reader.py::test_deflated_archive_zip_with_directory_entries_reads_like_the_notebook_made_it": 1.9,
    "test_root_guard.py::test_writing_command_leaves_a_foreign_folder_untouched": 1.9,
    "test_ledger_reader.py::test_verify_counts_every_finding_but_keeps_a_bounded_list_of_examples": 1.9,
    "test_metadata.py::test_metadata_downloads_both_csvs_from_a_mirror": 1.8,
    "test_archives_dask.py::test_archives_on_a_dask_cluster_give_the_same_zips_and_ledger_as_a_local_run": 1.8,
    "test_strict_decode.py::test_a_truncated_png_is_refused_and_a_whole_one_decodes": 1.8,
    "test_s3_destination.py::test_open_atomic_on_s3_publishes_the_whole_object": 1.8,
    "test_extras.py::test_the_dask_executor_without_dask_raises_the_hint_before_doing_anything": 1.8,
    "test_root_guard.py::test_an_empty_root_is_a_usage_error_not_the_current_folder": 1.8,
    "test_status_footers.py::test_status_of_shards_still_in_parts_matches_the_rows_exactly": 1.8,
    "test_verify.py::test_corrupted_zip_member_fails_its_crc_unless_fast": 1.8,
    "test_strict_decode.py::test_flipped_bytes_that_desynchronise_huffman_decoding_are_refused_never_ok_with_a_warning": 1.7,
    "test_net_guard_fetch.py::test_a_crafted_plan_run_by_the_fetch_stage_records_blocked_address_for_open_and_closed_ports": 1.7,
    "test_ledger_ownership.py::test_verify_requeue_changes_only_the_ledger_columns_it_owns": 1.7,
    "test_ledger_reader.py::test_sql_views_work_on_an_s3_root": 1.7,
    "test_reader.py::test_every_layout_reads_back_the_stored_bytes_in_plan_order": 1.7,
    "test_archives.py::test_streaming_into_an_s3_root_writes_the_zip_and_ledger_there": 1.6,
    "test_archives_resume.py::test_kill_mid_conversion_redoes_only_that_archive_without_downloading_again": 1.6,
    "test_errors.py::test_every_exception_in_src_has_exactly_one_category": 1.6,
    "test_archives.py::test_targets_from_s3_stores_each_needed_archive_and_records_every_plan_row": 1.6,
    "test_features.py::test_a_damaged_and_a_missing_stored_image_are_recorded_with_their_reason_and_the_rest_get_vectors": 1.6,
    "test_report.py::test_report_survives_sets_with_only_failures_nothing_finished_or_no_ledger": 1.4,
    "test_damaged_root.py::test_the_reported_case_from_a_shell_exits_6_with_one_line": 1.4,
    "test_estimate.py::test_url_rows_without_a_ledger_row_cost_their_original_size_at_the_measured_ratio_and_rate": 1.3,
    "test_extras.py::test_an_s3_root_without_s3fs_names_the_s3_extra": 1.3,
    "test_mirror.py::test_slow_rows_miss_a_short_total_deadline_while_slow_ok_rows_make_it": 1.3,
    "test_dask_executor.py::test_scheduler_without_workers_is_a_clear_error": 1.3,
    "test_ledger_reader.py::test_a_part_superseding_a_compacted_row_is_resolved_by_every_reader": 1.3,
    "test_dedup.py::test_dedup_writes_pairs_and_a_summary_with_the_headline": 1.3,
    "test_mirror.py::test_good_rows_serve_exactly_the_bytes_the_csv_describes": 1.2,
    "test_read_features.py::test_features_are_memory_mapped_rows_in_plan_order": 1.2,
    "test_stored_reason_kinds.py::test_status_of_a_finished_build_reads_no_row_data_of_its_shard_files": 1.1,
    "test_archives.py::test_sha256_mismatch_is_a_clear_error_and_the_bad_download_is_deleted": 1.1,
    "test_tls_proxy.py::test_a_plain_http_fetch_goes_through_http_proxy_as_an_absolute_uri": 1.1,
    "test_archives.py::test_a_disk_too_small_fails_before_any_byte_is_downloaded": 1.1,
    "test_archives_mirror.py::test_targets_and_validation_build_from_the_mirror_over_https": 1.1,
    "test_archives.py::test_missing_archive_at_the_source_fails_that_archive_only": 1.1,
    "test_decode_budget.py::test_an_image_larger_than_the_whole_budget_runs_alone_instead_of_failing": 1.0,
    "test_archives.py::test_archives_run_as_shards_on_the_local_executor": 1.0,
    "test_features_models.py::test_weights_of_another_network_are_refused_in_one_line": 1.0,
}


def is_fast(file: str, function: str) -> bool:
    """Whether the test `function` of test file `file` (a basename) belongs to the fast subset."""
    return FILES.get(file) == "fast" and SECONDS.get(f"{file}::{function}", 0.0) < FAST_LIMIT


def file_cost(file: str) -> float:
    """The measured seconds of a file's tests (0 when none is listed): the full run starts with the largest."""
    prefix = f"{file}::"
    return sum(s for name, s in SECONDS.items() if name.startswith(prefix))


def _test_files(tests: Path) -> dict[str, Path]:
    return {p.name: p for p in tests.rglob("test_*.py") if "support" not in p.relative_to(tests).parts}


def misplaced(tests: Path) -> list[str]:
    """Test files under `tests` placed in no tier, and placed names with no file, one line each."""
    found = _test_files(tests)
    return sorted(
        [f"{name}: in no tier" for name in found if name not in FILES]
        + [f"{name}: placed in a tier but missing" for name in FILES if name not in found]
    )


def unknown_tests(tests: Path) -> list[str]:
    """Names in SECONDS whose file under `tests` defines no such test function (renamed or removed)."""
    found = _test_files(tests)
    missing = []
    for name in sorted(SECONDS):
        file, function = name.split("::")
        text = found[file].read_text() if file in found else ""
        if not re.search(rf"^(async )?def {re.escape(function)}\(", text, re.M):
            missing.append(name)
    return missing


def folders_without_fast_files(tests: Path) -> list[str]:
    """Folders under `tests` (one per layer) holding test files but none placed fast: the subset misses them."""
    folders: dict[Path, bool] = {}
    for name, path in _test_files(tests).items():
        folders[path.parent] = folders.get(path.parent, False) or FILES.get(name) == "fast"
    return sorted(str(folder.relative_to(tests)) for folder, fast in folders.items() if not fast)
