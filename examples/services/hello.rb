puts "Hello, #{Hook['params'].fetch('name', 'world')}!"
