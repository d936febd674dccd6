<?php
// stack prelude for PHP: php php.php SCRIPT [ARGS...]
//
// Loads the Hook from $STACK_HOOK into the global array $Hook ($Hook['params'],
// $Hook['req'], $Hook['env']), defines stack_header() and stack_status() (fd 3
// control messages), then requires SCRIPT in the global scope, with SCRIPT's
// folder at the end of the include_path. Also fills
// $_GET (the query) and $_REQUEST (all params), and makes $argv and $_SERVER
// describe SCRIPT rather than this prelude. (header() and
// http_response_code() do nothing in the CLI: use the stack_ functions.)

// Open fd 3 before anything else opens a file: without it (a script run by
// hand) control messages are dropped.
$__stack_control = @fopen('php://fd/3', 'w');

function __stack_send(array $message): void
{
    if (!$GLOBALS['__stack_control']) {
        return;
    }
    flush(); // control and body stay in program order
    $line = json_encode($message, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    if (@fwrite($GLOBALS['__stack_control'], $line) !== strlen($line)) {
        $GLOBALS['__stack_control'] = false;
    }
}

/** Set a response header; $value may be a string or a list of strings. */
function stack_header(string $name, $value): void
{
    $value = is_array($value) ? array_map('strval', array_values($value)) : (string) $value;
    __stack_send(['type' => 'setHeader', 'payload' => ['name' => $name, 'value' => $value]]);
}

/** Set the response status code. */
function stack_status(int $code): void
{
    __stack_send(['type' => 'statusCode', 'payload' => ['value' => $code]]);
}

// Warm (STACK_WARM=1, started ahead of its call with no SCRIPT): say
// {"type": "ready"} on fd 3, then wait for the one call on stdin, 8 hex digits giving the length of a JSON object
// {"argv": [SCRIPT, ARGS...], "env": {...}}; take that argv and environment.
// STDIN is unbuffered first, so exactly the message is read: the script gets
// the rest.
function __stack_read_exactly(int $count): string
{
    $data = '';
    while (strlen($data) < $count) {
        $chunk = fread(STDIN, $count - strlen($data));
        if ($chunk === false || $chunk === '') {
            exit(0); // retired before any call
        }
        $data .= $chunk;
    }
    return $data;
}

if (getenv('STACK_WARM') === '1') {
    __stack_send(['type' => 'ready']); // loaded: the pool counts it as ready
    stream_set_read_buffer(STDIN, 0);
    $__stack_call = json_decode(__stack_read_exactly(hexdec(__stack_read_exactly(8))), true,
        512, JSON_THROW_ON_ERROR);
    foreach (array_keys(getenv()) as $__stack_name) {
        putenv($__stack_name);
        unset($_SERVER[$__stack_name], $_ENV[$__stack_name]);
    }
    foreach ($__stack_call['env'] as $__stack_name => $__stack_value) {
        putenv("$__stack_name=$__stack_value");
        $_SERVER[$__stack_name] = $__stack_value;
    }
    $_SERVER['REQUEST_TIME_FLOAT'] = microtime(true);
    $_SERVER['REQUEST_TIME'] = (int) $_SERVER['REQUEST_TIME_FLOAT'];
    $argv = array_merge([$argv[0]], $__stack_call['argv']);
    $argc = count($argv);
    unset($__stack_call, $__stack_name, $__stack_value);
}

$Hook = ['params' => [], 'req' => [], 'env' => []];
if (($__stack_path = getenv('STACK_HOOK')) !== false && $__stack_path !== '') {
    $Hook = json_decode(file_get_contents($__stack_path), true, 512, JSON_THROW_ON_ERROR) + $Hook;
}
unset($__stack_path);
$_GET = $Hook['req']['query'] ?? [];
$_REQUEST = $Hook['params'];

if ($argc < 2) {
    fwrite(STDERR, "usage: php php.php SCRIPT [ARGS...]\n");
    exit(2);
}
array_shift($argv);
$argc = count($argv);
$__stack_script = strpos($argv[0], '/') === false ? './' . $argv[0] : $argv[0];
$_SERVER['argv'] = $argv;
$_SERVER['argc'] = $argc;
$_SERVER['SCRIPT_FILENAME'] = $_SERVER['PATH_TRANSLATED'] = $__stack_script;
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = getenv('SCRIPT_NAME') ?: $__stack_script;
// The script's folder is its code: include and require look there too, after
// the include_path (the working directory is the call's own).
set_include_path(get_include_path() . PATH_SEPARATOR . dirname($__stack_script));
require $__stack_script;
