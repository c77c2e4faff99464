//! Test support, behind the `testing` feature: a throwaway etcd server and the store
//! conformance suite that every backend must pass.
//!
//! A backend's test file defines an async factory returning `(guard, Arc<dyn Store>)` (the
//! guard keeps the temp dir or etcd process alive) and calls
//! [`conformance_suite!`](crate::conformance_suite) with it, which expands to one
//! `#[tokio::test]` per contract test.

pub mod conformance;
mod etcd_server;

pub use etcd_server::EtcdServer;

/// Expands to one test per conformance check, each on a fresh store from `$factory`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@tests $factory;
            writes_increase_the_revision,
            create_then_get,
            create_of_existing_key_fails,
            update_guarded_by_mod_revision,
            update_of_missing_key_is_not_found,
            delete_guarded_by_mod_revision,
            recreate_after_delete_starts_a_new_incarnation,
            get_at_past_revisions,
            list_prefix_in_key_order,
            list_pages_share_one_revision,
            list_at_past_revision,
            large_lists_are_returned_whole,
            count_by_prefix,
            values_round_trip_exactly,
            empty_key_is_rejected,
            concurrent_writers_get_distinct_revisions,
            compare_and_swap_loses_no_update,
            watch_from_now,
            whole_keyspace_watch_sees_every_revision,
            watch_replays_history_with_previous_values,
            watch_sees_every_concurrent_write_in_order,
            slow_watcher_gets_every_event,
            compaction_keeps_the_latest_state,
            reads_below_the_compaction_point_fail,
            watch_below_the_compaction_point_fails,
            compact_rejects_future_and_old_revisions,
            random_operations_match_a_model,
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $factory().await;
                $crate::testing::conformance::$name(store).await;
            }
        )*
    };
}
