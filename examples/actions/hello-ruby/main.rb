# An action reads its input, a JSON object, on stdin and writes its output,
# one JSON object, on stdout. stderr is its log.
require 'json'

data = JSON.parse($stdin.read)
greeting = data.fetch('greeting', 'Hello')
warn "greeting #{data['name']}"
puts JSON.generate({ 'sentence' => "#{greeting}, #{data['name']}!" })
