# A module of hello.rb.
def greeting(name)
  "Hello, #{name}! (greeting.rb)"
end
