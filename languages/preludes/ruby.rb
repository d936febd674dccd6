# stack prelude for Ruby: ruby --disable-gems ruby.rb SCRIPT [ARGS...]
#
# Loads the Hook from $STACK_HOOK into the constant Hook (Hook['params'],
# Hook['req'], Hook['env'], and Hook['res'], whose methods write response
# control messages to fd 3), then loads SCRIPT at the top level, with its
# folder at the end of $LOAD_PATH.
#
# RubyGems costs about 60 ms at startup, so the run line disables it and the
# require below loads it the first time a library is not found without it.

# Before anything else opens a file: without an inherited fd 3 (a script run
# by hand) Ruby's own eventfd may hold the number, and for_fd refuses it.
control = begin
  IO.for_fd(3, 'w', autoclose: false)
rescue ArgumentError, SystemCallError
  nil
end

module Kernel
  alias_method :__stack_require, :require
  private :__stack_require

  private def require(path)
    begin
      return __stack_require(path)
    rescue LoadError
      raise if defined?(::Gem)
    end
    __stack_require('rubygems')
    require(path)
  end
end

require 'json'

$stdout.sync = true

send_control = lambda do |message|
  next unless control
  $stdout.flush # control and body stay in program order
  begin
    control.syswrite(JSON.generate(message) + "\n")
  rescue SystemCallError, IOError
    control = nil
  end
end

response = Class.new do
  attr_reader :status_code, :headers_sent, :finished

  def initialize(send_control)
    @send = send_control
    @status_code = 200
    @headers = {}
    @headers_sent = false
    @finished = false
  end

  def write(data)
    $stdout.write(data)
    @headers_sent = true
    self
  end

  def end(data = nil)
    write(data) unless data.nil?
    @headers_sent = @finished = true
    @send.call({ type: 'end' })
    self
  end

  def writeHead(code, reason = nil, headers = nil)
    reason, headers = nil, reason if reason.is_a?(Hash)
    @status_code = Integer(code)
    sent = {}
    (headers || {}).each do |name, value|
      sent[name.to_s] = value = header_value(value)
      @headers[name.to_s.downcase] = [name.to_s, value]
    end
    @send.call({ type: 'writeHead', payload: { code: @status_code, headers: sent } })
    @send.call({ type: 'statusMessage', payload: { value: reason.to_s } }) unless reason.nil?
    self
  end
  alias_method :write_head, :writeHead

  def status(code)
    @status_code = Integer(code)
    @send.call({ type: 'statusCode', payload: { value: @status_code } })
    self
  end

  def setHeader(name, value)
    value = header_value(value)
    @headers[name.to_s.downcase] = [name.to_s, value]
    @send.call({ type: 'setHeader', payload: { name: name.to_s, value: value } })
    self
  end
  alias_method :set_header, :setHeader

  def getHeader(name)
    (@headers[name.to_s.downcase] || [])[1]
  end
  alias_method :get_header, :getHeader

  def removeHeader(name)
    @headers.delete(name.to_s.downcase)
    @send.call({ type: 'removeHeader', payload: { name: name.to_s } })
    self
  end
  alias_method :remove_header, :removeHeader

  def json(obj)
    setHeader('Content-Type', 'application/json') unless @headers.key?('content-type')
    self.end(JSON.generate(obj))
  end

  private

  def header_value(value)
    value.is_a?(Array) ? value.map(&:to_s) : value.to_s
  end
end

data = ENV['STACK_HOOK'].to_s.empty? ? {} : JSON.parse(File.read(ENV['STACK_HOOK']))
Hook = { 'params' => {}, 'req' => {}, 'env' => {} }.merge(data)
Hook['res'] = response.new(send_control)

abort 'usage: ruby ruby.rb SCRIPT [ARGS...]' if ARGV.empty?
script = File.expand_path(ARGV.shift)
$0 = script # so `if __FILE__ == $0` holds in the script
# The script's folder is its code: `require 'helper'` finds helper.rb there
# (last, after Ruby's own); require_relative works as ever.
$LOAD_PATH.push(File.dirname(script))
load script
