# Copyright 2026 The mbrl_robot Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""One synchronous ``std_srvs/Trigger`` call for the node tests' harnesses."""

from std_srvs.srv import Trigger


def call_trigger(executor, client, timeout=30.0, attempts=1):
    """The answer of ``client``'s service to an empty request, spinning ``executor`` meanwhile.

    A request unanswered in ``timeout`` s is sent again, up to ``attempts`` requests in all:
    give more than one only for a service that may be asked twice (a query, not a command).
    Fast DDS drops a response when the client's response reader has not matched the service
    within 100 ms (ros2/rmw_fastrtps#390, #467: the server logs "failed to send response
    (timeout)"), which a busy 2-core CI machine can make happen. Fails naming the service.
    """
    assert client.wait_for_service(timeout_sec=timeout), \
        f'{client.srv_name} not offered within {timeout:g} s'
    for _ in range(attempts):
        future = client.call_async(Trigger.Request())
        executor.spin_until_future_complete(future, timeout_sec=timeout)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    raise AssertionError(f'{client.srv_name} did not answer {attempts} request(s) in '
                         f'{timeout:g} s each')
