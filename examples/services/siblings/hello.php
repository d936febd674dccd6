<?php
// __DIR__ is this script's folder.
require_once __DIR__ . '/greeting.php';
echo greeting($Hook['params']['name'] ?? 'world'), "\n";
