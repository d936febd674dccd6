<?php
stack_header('Content-Type', 'application/json');
echo json_encode((object) $Hook['params'], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
