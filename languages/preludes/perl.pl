# stack prelude for Perl: perl perl.pl SCRIPT [ARGS...]
#
# Reads $STACK_HOOK_FLAT (name\0value\0 pairs) into package variables of main
# ($Hook_params_name, ...) and the hashes %Hook_params, %Hook_req, %Hook_env
# (keys without the prefix: $Hook_params{name}), by symbol table assignment,
# never eval. They are imported, so a script under `use strict` may use them
# unqualified. Defines stack_status and stack_header (fd 3 control messages),
# then runs SCRIPT with `do` in package main, with its folder at the end of
# @INC. No modules are loaded: this runs before every call.
package Stack::Prelude;

# Before anything else opens a file: without an inherited fd 3 (a script run
# by hand) control messages are dropped.
my $control;
undef $control unless open $control, '>&=', 3;

$| = 1;    # STDOUT unbuffered: each print is streamed

my %sections = (params => {}, req => {}, env => {});
if (defined $ENV{STACK_HOOK_FLAT} && length $ENV{STACK_HOOK_FLAT}) {
    open my $in, '<:raw', $ENV{STACK_HOOK_FLAT}
        or die "stack: cannot read $ENV{STACK_HOOK_FLAT}: $!\n";
    local $/ = "\0";
    while (defined(my $name = <$in>)) {
        my $value = <$in>;
        last unless defined $value;
        chomp $name;
        chomp $value;
        # Only Hook_* names: a crafted name can neither run code nor replace %ENV.
        next unless $name =~ /\AHook_[A-Za-z0-9_]*\z/;
        *{"main::$name"} = \$value;
        $sections{$1}{$2} = $value if $name =~ /\AHook_(params|req|env)_(.+)\z/s;
    }
    close $in;
}
*main::Hook_params = $sections{params};
*main::Hook_req    = $sections{req};
*main::Hook_env    = $sections{env};

sub json_string {
    my $s = shift;
    # Characters become UTF-8; bytes stay as they are unless they are not
    # UTF-8, then they are taken as Latin-1.
    my $copy = $s;
    utf8::encode($s) if utf8::is_utf8($s) || !utf8::decode($copy);
    $s =~ s/(["\\])/\\$1/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\t/\\t/g;
    $s =~ s/([\x00-\x1f\x7f])/sprintf('\\u%04x', ord $1)/ge;
    return qq("$s");
}

sub send_control {
    my ($line) = @_;
    return unless $control;
    # Turning $| on flushes STDOUT: control and body stay in program order.
    my $selected = select STDOUT;
    my $autoflush = $|;
    $| = 1;
    $| = $autoflush;
    select $selected;
    $line .= "\n";
    while (length $line) {
        my $written = syswrite $control, $line;
        unless (defined $written) { undef $control; return }
        substr($line, 0, $written) = '';
    }
}

# stack_status(CODE): set the response status.
sub main::stack_status {
    my ($code) = @_;
    die "stack_status: not a status code: $code\n" unless defined $code && $code =~ /\A[0-9]+\z/;
    send_control(sprintf '{"type":"statusCode","payload":{"value":%d}}', $code);
}

# stack_header(NAME, VALUE): set a response header; VALUE may be an array ref.
sub main::stack_header {
    my ($name, $value) = @_;
    $value = ref $value eq 'ARRAY'
        ? '[' . join(',', map { json_string($_) } @$value) . ']'
        : json_string($value);
    send_control(sprintf '{"type":"setHeader","payload":{"name":%s,"value":%s}}',
        json_string($name), $value);
}

my $script = shift @ARGV;
die "usage: perl perl.pl SCRIPT [ARGS...]\n" unless defined $script;
$script = "./$script" unless $script =~ m{\A\.{0,2}/};    # do FILE would search @INC
$0 = $script;    # FindBin's $Bin is the script's folder
# The script's folder is its code: `require 'helper.pl'` and `use Helper`
# find files there (last, as when @INC held ".").
push @INC, $script =~ s{/[^/]*\z}{}r;

package main;
delete $INC{$script};
do $script;
if ($@) {
    print STDERR $@;
    exit 255;
}
die "stack: cannot run $script: $!\n" unless exists $INC{$script};
