// An Exo handler: the whole request JSON on stdin, the whole response JSON on
// stdout; settings from EXO__* variables.
const fs = require('fs');

const request = JSON.parse(fs.readFileSync('/dev/stdin', 'utf8'));
const mood = process.env.EXO__EXAMPLE__MOOD || 'calm';
const { greeting, name } = request.input;

console.log(JSON.stringify({
  status: 'OK',
  output: { text: `${greeting}, ${name} (${mood})` },
}));
