mod settings;

pub use settings::*;
