//! Row-level incremental tables: digest maps and deltas. (Being written.)
