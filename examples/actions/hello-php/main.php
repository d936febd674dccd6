<?php
// An action reads its input, a JSON object, on stdin and writes its output,
// one JSON object, on stdout. stderr is its log.
$data = json_decode(file_get_contents('php://stdin'), true);
$greeting = $data['greeting'] ?? 'Hello';
fwrite(STDERR, "greeting {$data['name']}\n");
echo json_encode(['sentence' => "$greeting, {$data['name']}!"], JSON_UNESCAPED_UNICODE);
