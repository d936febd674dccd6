use strict;
use warnings;
# FindBin's $Bin is this script's folder.
use FindBin;
require "$FindBin::Bin/greeting.pl";

print greeting($Hook_params{name} // 'world'), "\n";
