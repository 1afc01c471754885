"""The service's limits and the name of its token variable: torch-free, so the CLI's options read them
(`hashing serve --help` shows these defaults) without loading the application."""

MAX_UPLOAD_MB = 10.0                 # the largest request body, MB (--max-upload)
MAX_IMAGES = 256                     # files in one request
MAX_MEGAPIXELS = 16.0                # the largest upload decoded (after a JPEG's reduced-scale decode; --max-megapixels)
TOKEN_ENV = "HASHING_TOKEN"          # the environment variable that holds the token (--token)
