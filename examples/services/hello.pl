use strict;
use warnings;

# %Hook_params is always there, so `use strict` is happy whether or not the
# parameter was sent ($Hook_params_name exists only when it was).
print 'Hello, ', $Hook_params{name} // 'world', "!\n";
