<?php
echo 'Hello, ', $Hook['params']['name'] ?? 'world', "!\n";
