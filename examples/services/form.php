<?php
// Echoes the posted form fields (urlencoded or multipart) as plain text.
stack_header('Content-Type', 'text/plain; charset=utf-8');
if (!$Hook['params']) {
    echo "no fields\n";
}
foreach ($Hook['params'] as $name => $value) {
    if (is_array($value)) {
        $value = json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }
    echo $name, ': ', $value, "\n";
}
