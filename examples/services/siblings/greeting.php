<?php
// A module of hello.php.
function greeting(string $name): string
{
    return "Hello, $name! (greeting.php)";
}
