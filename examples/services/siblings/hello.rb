# require_relative is relative to this file, as ever.
require_relative 'greeting'

puts greeting(Hook['params']['name'] || 'world')
