//! Feature windows: observations grouped per station into hour-ending windows and summarised as
//! [`FeatureRecord`](crate::contract::FeatureRecord)s (count; temperature mean/min/max/population
//! std; humidity, pressure and wind-speed means; wind-speed max; precipitation sum).
//!
//! [`WindowAccumulator`] is the single place the per-window maths lives: the streaming operator
//! feeds it one observation at a time, and [`hourly_features`] / [`features_in_input_order`] use
//! it for batch aggregation (tests, training, the committed `data/features/*.jsonl` files).

pub mod event_time;
pub mod window;

pub use window::{
    checked_window_end_for, features_in_input_order, hourly_features, window_end_for, window_start_for, RunningStats, RunningSum,
    WindowAccumulator, DEFAULT_WINDOW,
};
