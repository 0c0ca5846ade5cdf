//! TODO(proxy): owned by its issue; replaced as the module lands.
