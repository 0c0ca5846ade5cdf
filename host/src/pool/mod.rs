//! TODO(pool): owned by its issue; replaced as the module lands.
