import asyncio
from microsandbox import PythonSandbox

async def main():
    async with PythonSandbox.create(name="python-demo") as sb:
        # 直接执行Python代码
        exec = await sb.run("print('Hello from Python!')")
        print(await exec.output())
        
        # 安装和使用包
        # [msb e2e] No internet here. In place of `pip install requests` and a GET to
        # https://httpbin.org/json, the same kind of JSON is served from inside the sandbox
        # and fetched with the standard library (works whatever the sandbox's network mode).
        await sb.run("""
import http.server, json, threading
class JSONHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"slideshow": {"title": "Sample Slide Show"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
local_httpbin = http.server.HTTPServer(("127.0.0.1", 0), JSONHandler)
threading.Thread(target=local_httpbin.serve_forever, daemon=True).start()
""")
        exec = await sb.run("""
import urllib.request
response = urllib.request.urlopen(f'http://127.0.0.1:{local_httpbin.server_port}/json')
print(response.status)
""")
        print(await exec.output())

asyncio.run(main())
