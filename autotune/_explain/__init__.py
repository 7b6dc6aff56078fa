"""What a compiled step's memory is made of: the peak buffer by buffer, the
split of one compile, the unfused boundary."""
