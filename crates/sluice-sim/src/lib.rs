//! Placeholder: the simulator lands here.
